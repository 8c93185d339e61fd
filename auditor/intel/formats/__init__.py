"""One module per intel file format; each parser takes text and gives an IntelFile."""
