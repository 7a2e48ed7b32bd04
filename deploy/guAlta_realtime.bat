@echo off
rem guAlta real-time watcher on Windows (the thesis' deployment): the AllSky Pi's images reached over Samba.
rem Copy guAltaConfig.example.py to guAltaConfig.py and set guAlta_main_folder there to the share,
rem e.g. r"\\allskypi\allsky\images" (or a mapped drive),
rem and the API key with: setx GUALTA_API_KEY "your-key"   (once, then open a new console).
rem Run by hand, or by the scheduled task in guAlta_realtime_task.xml. Ctrl-C stops it cleanly.
rem Each night's scores CSV is written to scores\YYYYMMDD.csv when the night ends.
rem A watcher that stops with an error (a share gone, a crash) is started again a minute later.
cd /d "%~dp0.."
set "PYEXE=python"
if exist .venv\Scripts\python.exe (
  set "PYEXE=.venv\Scripts\python.exe"
) else (
  rem conda: conda env create -f guAlta_conda_env.yml, then this finds python in the activated environment
  call conda activate guAlta
)
:run
"%PYEXE%" guAlta.py realtime --scores scores %*
set "CODE=%ERRORLEVEL%"
if "%CODE%"=="0" exit /b 0
if "%CODE%"=="130" exit /b 130
if "%CODE%"=="2" (
  echo guAlta realtime: invalid settings ^(exit status 2^): fix them and start it again
  exit /b 2
)
echo guAlta realtime stopped with exit status %CODE%: starting it again in a minute (Ctrl-C to give up)
timeout /t 60 /nobreak >nul
goto run
