// Package units parses the human-readable sizes that flags and volume
// attributes take, so every entry point accepts the same spellings.
package units
