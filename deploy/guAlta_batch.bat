@echo off
rem guAlta batch run of the latest night on Windows: its scores CSV as scores\YYYYMMDD.csv (the night scored),
rem reports through the outbox.
rem Usage: deploy\guAlta_batch.bat [--folder \\allskypi\allsky\images\YYYYMMDD] [--no-upload] [...]
cd /d "%~dp0.."
if not exist scores mkdir scores
if exist .venv\Scripts\python.exe (
  .venv\Scripts\python.exe guAlta.py batch --scores scores\ %*
) else (
  call conda activate guAlta
  python guAlta.py batch --scores scores\ %*
)
