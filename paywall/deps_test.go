package paywall

import (
	"os/exec"
	"strings"
	"testing"
)

// TestRequestPathDependencies: paywall/ and pricing/ sit on the request path, which must never
// pull in go-ethereum or the settlement worker (DESIGN §6).
func TestRequestPathDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".", "../pricing").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list listed only %d packages: %s", len(deps), out)
	}
	for _, d := range deps {
		if strings.HasPrefix(d, "github.com/ethereum/") || strings.HasPrefix(d, "github.com/tollgate-dev/tollgate/settlement") {
			t.Errorf("the request path depends on %s", d)
		}
	}
}
