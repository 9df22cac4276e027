package roomlbtest

import (
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Counter reads the counter name from g: name{label="value",...} is the
// series with those labels (0 while there is none yet). A metric g does not
// have fails the test.
func Counter(t testing.TB, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	// name{label="value",...}: the series with those labels.
	name, labels, _ := strings.Cut(strings.TrimSuffix(name, "}"), "{")
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for _, l := range strings.Split(labels, ",") {
				k, v, _ := strings.Cut(l, "=")
				if l == "" {
					continue
				}
				found := false
				for _, lp := range m.GetLabel() {
					found = found || lp.GetName() == k && strconv.Quote(lp.GetValue()) == v
				}
				if !found {
					continue series
				}
			}
			return m.GetCounter().GetValue()
		}
		return 0 // no series with those labels yet
	}
	t.Fatalf("no metric %s", name)
	return 0
}
