"""pytest plugins that inject faults into bench sessions run by the tests (never loaded by the library)."""
