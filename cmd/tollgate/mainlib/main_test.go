package mainlib

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/internal/testdb"
)

func TestMainUsage(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantErr  error
		wantOut  string
		wantCode int
	}{
		{"no command", nil, errUsage, "usage: tollgate COMMAND", 2},
		{"help", []string{"help"}, nil, "migrate", 0},
		{"unknown", []string{"frobnicate"}, errUsage, "", 2},
		{"bad flag", []string{"migrate", "-nope"}, errUsage, "", 2},
		// -h prints the flags and stops: it must not start a server.
		{"serve help", []string{"serve", "-h"}, nil, "", 0},
		{"settle help", []string{"settle", "-h"}, nil, "", 0},
		{"migrate help", []string{"migrate", "-h"}, nil, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := Main(t.Context(), tt.args, &out, &errOut)
			if (tt.wantErr == nil && err != nil) || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Fatalf("Main error = %v, want %v", err, tt.wantErr)
			}
			if err != nil && ExitCode(err) != tt.wantCode {
				t.Errorf("exit code = %d, want %d", ExitCode(err), tt.wantCode)
			}
			if !strings.Contains(out.String(), tt.wantOut) {
				t.Errorf("stdout %q does not contain %q", out.String(), tt.wantOut)
			}
		})
	}
}

func TestMigrateCommand(t *testing.T) {
	db := testdb.New(t) // empty database: the command applies everything
	t.Setenv("TOLLGATE_DATABASE_URL", db.URL)
	for i, want := range []string{"migration(s) applied", "0 migration(s) applied"} {
		var out, errOut bytes.Buffer
		if err := Main(t.Context(), []string{"migrate"}, &out, &errOut); err != nil {
			t.Fatalf("run %d: %v\n%s", i, err, errOut.String())
		}
		if !strings.Contains(out.String(), want) {
			t.Errorf("run %d: output %q does not contain %q", i, out.String(), want)
		}
	}
}

func TestConfigProblemsAreReported(t *testing.T) {
	t.Setenv("TOLLGATE_LOG_LEVEL", "loud")
	t.Setenv("TOLLGATE_DATABASE_MAX_CONNS", "0")
	var out, errOut bytes.Buffer
	err := Main(t.Context(), []string{"migrate"}, &out, &errOut)
	if err == nil {
		t.Fatal("migrate ran with a bad configuration")
	}
	for _, w := range []string{"log.level", "database.max_conns"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %s", err, w)
		}
	}
}
