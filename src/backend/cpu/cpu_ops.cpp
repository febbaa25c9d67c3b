// placeholder file replaced by the CPU backend implementation
