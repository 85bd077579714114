// Package formattest writes safetensors and GGUF files, well formed or
// not, for the tests of the packages that read them (modelformat and
// modelformat/loadorder), and reads them back strictly (StrictReader:
// bounded reads inside the file). Like net/http/httptest, it is meant for
// tests only.
package formattest
