@echo off
rem guAlta batch run of the latest night on Windows: its scores CSV as scores\YYYYMMDD.csv (the night scored),
rem reports through the outbox.
rem Usage: deploy\guAlta_batch.bat [--folder \\allskypi\allsky\images\YYYYMMDD | --catch-up 7] [--no-upload] [...]
rem (--catch-up 7: first the nights of the last week without a scores CSV, if the PC was off or a run failed)
cd /d "%~dp0.."
if not exist scores mkdir scores
if exist .venv\Scripts\python.exe (
  .venv\Scripts\python.exe guAlta.py batch --scores scores\ %*
) else (
  call conda activate guAlta
  python guAlta.py batch --scores scores\ %*
)
