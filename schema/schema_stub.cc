// Placeholder translation unit until the Sandboxfile model lands.
