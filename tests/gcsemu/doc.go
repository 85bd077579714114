// Package gcsemu runs a real Cloud Storage emulator for tests:
// fake-gcs-server (github.com/fsouza/fake-gcs-server), which speaks the
// JSON API (listing, metadata, alt=media reads, uploads), which the
// helpers here also use to seed it. It is built once per machine from the Go module proxy with
// `go install`, so that neither it nor its many dependencies enter the
// project's go.mod, and started as its own process on loopback.
//
// In front of it sits a small proxy that tests use as the endpoint: it
// counts requests, records whether they carried a bearer token, and
// injects faults into object reads (a 503, a body cut short, a reset
// connection) and into the chunks of resumable uploads (a 503, a 403),
// whose sessions it points back at itself. The emulator does not check preconditions, credentials or
// stored checksums; it does serve an object's generation only while that
// generation is current, which is what pins reads.
package gcsemu
