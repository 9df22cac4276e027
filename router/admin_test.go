package router

import (
	"net/http"
	"testing"
)

// The admin address alone, as typed in a browser, leads to the dashboard;
// other unknown paths still answer 404.
func TestAdminRootRedirectsToDashboard(t *testing.T) {
	c := newCluster(t, Config{})
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Get("http://" + c.admin + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusFound || res.Header.Get("Location") != "/dashboard" {
		t.Fatalf("GET / = %d Location %q, want 302 to /dashboard", res.StatusCode, res.Header.Get("Location"))
	}
	// Followed, as a browser does.
	res, err = http.Get("http://" + c.admin + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Request.URL.Path != "/dashboard" {
		t.Fatalf("GET / followed: %d at %s, want 200 at /dashboard", res.StatusCode, res.Request.URL.Path)
	}
	res, err = client.Get("http://" + c.admin + "/nothing-here")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /nothing-here = %d, want 404", res.StatusCode)
	}
}
