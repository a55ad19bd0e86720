// Package deploy holds no code. It owns the files operators deploy beside Tollgate's binary —
// the Prometheus rules in prometheus/ — and its test checks them against the metrics the
// program really registers.
package deploy
