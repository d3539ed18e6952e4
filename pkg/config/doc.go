// Package config loads and validates the agent's YAML configuration file
// (the "configuration core" of ARCHITECTURE.md). Unknown keys are errors, and
// every validation error names the offending field by its YAML path, so an
// operator can fix the file without reading code. Secrets are never part of
// the file: they come from the environment or from files the config names.
package config
