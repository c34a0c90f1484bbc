"""sensiformer"""
