// Package promtest picks series out of a parsed Prometheus exposition, for
// the tests and tools that check modelfs's metrics.
package promtest
