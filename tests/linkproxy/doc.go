// Package linkproxy is a TCP proxy that emulates a network link between
// clients and a loopback server: a bandwidth limit shared by all
// connections, an optional limit per connection, and a propagation
// delay. The benchmarks put it in front of their S3 servers to stand for
// a remote store or a shared WAN link.
package linkproxy
