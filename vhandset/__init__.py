"""The virtual handset: the device side of the ADB wire protocol over a simulated Android phone."""
