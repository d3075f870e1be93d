"""genorder's built-in plugins. Each subpackage registers through the `genorder` entry-point group,
exactly as a third-party package would; the core never imports anything from here."""
