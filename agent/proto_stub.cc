// Placeholder translation unit until the agent protocol lands.
