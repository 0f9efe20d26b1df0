"""An example plug-in package for orbitbench's model zoo (see CONTRIBUTING.md, "Your own package")."""
