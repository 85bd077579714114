package s3server

import "testing"

// StartTest starts a server on a loopback port for the test t, with the
// given buckets, and closes it when t ends. opts.Dir defaults to a
// temporary directory of t's.
func StartTest(t testing.TB, opts Options, buckets ...string) *Server {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	for _, b := range buckets {
		if err := srv.CreateBucket(b); err != nil {
			t.Fatal(err)
		}
	}
	return srv
}
