// Package azurite runs the Azure Storage emulator Azurite (npm package
// azurite) on loopback for tests: Start launches azurite-blob with
// in-memory storage on a port of its own choosing and stops it when the
// test ends, and Proxy sits in front of it to inject faults (5xx,
// throttling, bodies cut short by a reset or a clean close). Tests that
// need it skip, saying why, when azurite-blob is not installed
// (.ci/install-deps installs it).
package azurite
