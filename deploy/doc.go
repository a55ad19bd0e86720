// Package deploy holds no code. It owns the files operators deploy beside Tollgate's binary —
// the Prometheus rules in prometheus/ — and its test checks them against the metrics the
// program really registers. It is a module of its own (go.mod here, the code beside it by a
// replace directive) so that the test's one heavy dependency, Prometheus's rule parser, stays
// out of the binary's module graph.
package deploy
