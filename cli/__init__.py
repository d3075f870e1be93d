"""genorder's command line (Typer). Library code never prints; rich lives here."""
