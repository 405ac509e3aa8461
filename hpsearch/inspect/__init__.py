"""Looking at a study: console progress, status, export, dashboard and report; never imports torch."""
