// Placeholder translation unit until the state store lands.
