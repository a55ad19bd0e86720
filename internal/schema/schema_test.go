package schema_test

import (
	"testing"

	"github.com/tollgate-dev/tollgate/internal/migrate"
	"github.com/tollgate-dev/tollgate/internal/schema"
)

// TestAllLoad reads every package's embedded migrations without a database, so a misnamed
// folder or file fails here rather than at `tollgate migrate`.
func TestAllLoad(t *testing.T) {
	seen := map[string]bool{}
	for _, src := range schema.All() {
		if seen[src.Name] {
			t.Errorf("source %q listed twice", src.Name)
		}
		seen[src.Name] = true
		ms, err := migrate.Load(src)
		if err != nil {
			t.Errorf("Load(%s): %v", src.Name, err)
			continue
		}
		if len(ms) == 0 {
			t.Errorf("Load(%s): no migrations", src.Name)
		}
	}
}
