"""The bundled demo: synthetic subjects in the iSeg-2017 layout, built from the ICBM152 template."""
