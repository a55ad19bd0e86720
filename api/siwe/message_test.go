package siwe

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
)

// The examples of EIP-4361's specification section.
const (
	eipExample = `example.com wants you to sign in with your Ethereum account:
0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2

I accept the ExampleOrg Terms of Service: https://example.com/tos

URI: https://example.com/login
Version: 1
Chain ID: 1
Nonce: 32891756
Issued At: 2021-09-30T16:25:24Z
Resources:
- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/
- https://example.com/my-web2-claim.json`

	// The same with the optional scheme before the domain.
	eipExampleScheme = "https://" + eipExample

	// Every optional field, no statement, a port and fractional seconds with an offset.
	allFields = `localhost:4361 wants you to sign in with your Ethereum account:
0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2


URI: http://localhost:4361/connect?t=abc
Version: 1
Chain ID: 137
Nonce: N0nce1234567
Issued At: 2021-09-30T16:25:24.123+02:00
Expiration Time: 2021-09-30T15:25:24Z
Not Before: 2021-09-30T14:20:00Z
Request ID: req-1:a@b
Resources:
- urn:example:resource`
)

func TestParseEIPExamples(t *testing.T) {
	addr := common.HexToAddress("0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2")
	issued := time.Date(2021, 9, 30, 16, 25, 24, 0, time.UTC)
	tests := []struct {
		name, text string
		want       Message
	}{
		{"spec example", eipExample, Message{
			Domain: "example.com", Address: addr,
			Statement: "I accept the ExampleOrg Terms of Service: https://example.com/tos",
			URI:       "https://example.com/login", Version: "1", ChainID: 1, Nonce: "32891756",
			IssuedAt: issued,
			Resources: []string{
				"ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/",
				"https://example.com/my-web2-claim.json",
			},
		}},
		{"spec example with scheme", eipExampleScheme, Message{
			Scheme: "https", Domain: "example.com", Address: addr,
			Statement: "I accept the ExampleOrg Terms of Service: https://example.com/tos",
			URI:       "https://example.com/login", Version: "1", ChainID: 1, Nonce: "32891756",
			IssuedAt: issued,
			Resources: []string{
				"ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/",
				"https://example.com/my-web2-claim.json",
			},
		}},
		{"all optional fields", allFields, Message{
			Domain: "localhost:4361", Address: addr,
			URI: "http://localhost:4361/connect?t=abc", Version: "1", ChainID: 137, Nonce: "N0nce1234567",
			IssuedAt:       time.Date(2021, 9, 30, 14, 25, 24, 123e6, time.UTC),
			ExpirationTime: time.Date(2021, 9, 30, 15, 25, 24, 0, time.UTC),
			NotBefore:      time.Date(2021, 9, 30, 14, 20, 0, 0, time.UTC),
			RequestID:      "req-1:a@b",
			Resources:      []string{"urn:example:resource"},
		}},
		{"no statement, one empty line", strings.Replace(allFields, "\n\n\nURI", "\n\nURI", 1), Message{
			Domain: "localhost:4361", Address: addr,
			URI: "http://localhost:4361/connect?t=abc", Version: "1", ChainID: 137, Nonce: "N0nce1234567",
			IssuedAt:       time.Date(2021, 9, 30, 14, 25, 24, 123e6, time.UTC),
			ExpirationTime: time.Date(2021, 9, 30, 15, 25, 24, 0, time.UTC),
			NotBefore:      time.Date(2021, 9, 30, 14, 20, 0, 0, time.UTC),
			RequestID:      "req-1:a@b",
			Resources:      []string{"urn:example:resource"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.text)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			assertSame(t, got, tt.want)
			// The canonical form parses to the same message.
			again, err := Parse(got.String())
			if err != nil {
				t.Fatalf("Parse(String()): %v\n%s", err, got.String())
			}
			assertSame(t, again, got)
		})
	}
	// The spec's examples are already canonical.
	for _, text := range []string{eipExample, eipExampleScheme, allFields} {
		m, _ := Parse(text)
		if m.String() != text {
			t.Errorf("String() =\n%s\nwant\n%s", m.String(), text)
		}
	}
}

func assertSame(t *testing.T, got, want Message) {
	t.Helper()
	if got.Scheme != want.Scheme || got.Domain != want.Domain || got.Address != want.Address ||
		got.Statement != want.Statement || got.URI != want.URI || got.Version != want.Version ||
		got.ChainID != want.ChainID || got.Nonce != want.Nonce || got.RequestID != want.RequestID ||
		!got.IssuedAt.Equal(want.IssuedAt) || !got.ExpirationTime.Equal(want.ExpirationTime) ||
		!got.NotBefore.Equal(want.NotBefore) || !slices.Equal(got.Resources, want.Resources) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

// TestParseMalformed feeds one broken message per rule of the ABNF; each must fail with
// ErrMalformed and say what is wrong.
func TestParseMalformed(t *testing.T) {
	tests := []struct {
		name, text, want string
	}{
		{"empty", "", "the first line must end with"},
		{"wrong header", strings.Replace(eipExample, "wants you to sign in", "wants you to log in", 1), "the first line must end with"},
		{"no domain", strings.Replace(eipExample, "example.com wants", " wants", 1), "invalid domain"},
		{"domain with path", strings.Replace(eipExample, "example.com wants", "example.com/x wants", 1), "invalid domain"},
		{"domain with space", strings.Replace(eipExample, "example.com wants", "exa mple.com wants", 1), "invalid domain"},
		{"domain bad port", strings.Replace(eipExample, "example.com wants", "example.com:port wants", 1), "invalid domain"},
		{"bad scheme", strings.Replace(eipExampleScheme, "https://", "1http://", 1), "invalid scheme"},
		{"CRLF", strings.ReplaceAll(eipExample, "\n", "\r\n"), "CRLF"},
		{"missing address", "example.com wants you to sign in with your Ethereum account:", "missing address"},
		{"short address", strings.Replace(eipExample, "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2", "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc", 1), "invalid address"},
		{"address without 0x", strings.Replace(eipExample, "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2", "C02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2aa", 1), "invalid address"},
		{"address not checksummed", strings.Replace(eipExample, "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2", "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2", 1), "not EIP-55 checksummed"},
		{"address bad checksum", strings.Replace(eipExample, "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2", "0xC02AAA39b223FE8D0A0e5C4F27eAD9083C756Cc2", 1), "not EIP-55 checksummed"},
		{"no empty line after address", strings.Replace(eipExample, "Cc2\n\nI accept", "Cc2\nI accept", 1), "want an empty line after the address"},
		{"no empty line after statement", strings.Replace(eipExample, "tos\n\nURI", "tos\nURI", 1), "want an empty line after the statement"},
		{"two-line statement", strings.Replace(eipExample, "Service: ", "Service:\n", 1), "want an empty line after the statement"},
		{"statement with a quote", strings.Replace(eipExample, "I accept", `I "accept"`, 1), "statement has characters"},
		{"missing URI", strings.Replace(eipExample, "URI: https://example.com/login\n", "", 1), `want "URI: …"`},
		{"relative URI", strings.Replace(eipExample, "URI: https://example.com/login", "URI: /login", 1), "invalid URI"},
		{"URI with space", strings.Replace(eipExample, "URI: https://example.com/login", "URI: https://example.com/log in", 1), "invalid URI"},
		{"version 2", strings.Replace(eipExample, "Version: 1", "Version: 2", 1), "unsupported version"},
		{"missing version", strings.Replace(eipExample, "Version: 1\n", "", 1), `want "Version: …"`},
		{"chain id not a number", strings.Replace(eipExample, "Chain ID: 1", "Chain ID: one", 1), "chain id must be digits"},
		{"chain id negative", strings.Replace(eipExample, "Chain ID: 1", "Chain ID: -1", 1), "chain id must be digits"},
		{"chain id zero", strings.Replace(eipExample, "Chain ID: 1", "Chain ID: 0", 1), "chain id out of range"},
		{"chain id overflow", strings.Replace(eipExample, "Chain ID: 1", "Chain ID: 99999999999999999999999", 1), "chain id out of range"},
		{"short nonce", strings.Replace(eipExample, "Nonce: 32891756", "Nonce: 3289175", 1), "nonce must be at least 8"},
		{"nonce with dash", strings.Replace(eipExample, "Nonce: 32891756", "Nonce: 32891756-x", 1), "nonce must be at least 8"},
		{"fields out of order", strings.Replace(eipExample, "Version: 1\nChain ID: 1", "Chain ID: 1\nVersion: 1", 1), `want "Version: …"`},
		{"bad issued at", strings.Replace(eipExample, "2021-09-30T16:25:24Z", "2021-09-30 16:25:24", 1), "not an RFC 3339 date-time"},
		{"issued at without zone", strings.Replace(eipExample, "2021-09-30T16:25:24Z", "2021-09-30T16:25:24", 1), "not an RFC 3339 date-time"},
		{"issued at bad month", strings.Replace(eipExample, "2021-09-30T16:25:24Z", "2021-13-30T16:25:24Z", 1), "not an RFC 3339 date-time"},
		{"bad expiration", strings.Replace(allFields, "Expiration Time: 2021-09-30T15:25:24Z", "Expiration Time: tomorrow", 1), "Expiration Time: not an RFC 3339"},
		{"bad not before", strings.Replace(allFields, "Not Before: 2021-09-30T14:20:00Z", "Not Before: 1632000000", 1), "Not Before: not an RFC 3339"},
		{"bad request id", strings.Replace(allFields, "Request ID: req-1:a@b", "Request ID: a b", 1), "Request ID has characters"},
		{"bad resource", strings.Replace(eipExample, "- https://example.com/my-web2-claim.json", "* https://example.com/my-web2-claim.json", 1), "a resource must be"},
		{"relative resource", strings.Replace(eipExample, "- https://example.com/my-web2-claim.json", "- claim.json", 1), "a resource must be"},
		{"trailing newline", eipExample + "\n", "a resource must be"},
		{"trailing newline without resources", strings.Split(eipExample, "\nResources:")[0] + "\n", "unexpected"},
		{"unknown field", strings.Split(eipExample, "\nResources:")[0] + "\nColor: blue", "unexpected"},
		{"duplicate field", strings.Split(eipExample, "\nResources:")[0] + "\nNonce: 32891756", "unexpected"},
		{"too long", eipExample + strings.Repeat("x", maxMessageBytes), "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.text)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse = %v, want ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	m, err := Parse(allFields)
	if err != nil {
		t.Fatal(err)
	}
	ok := Expect{
		Domain: "localhost:4361", URI: "http://localhost:4361/connect?t=abc", ChainIDs: []uint64{1, 137},
		RequestID: "req-1:a@b", Now: time.Date(2021, 9, 30, 14, 30, 0, 0, time.UTC), MaxAge: 10 * time.Minute,
	}
	if err := m.Check(ok); err != nil {
		t.Fatalf("Check(valid) = %v", err)
	}
	tests := []struct {
		name   string
		change func(*Expect)
		want   error
	}{
		{"other domain", func(e *Expect) { e.Domain = "evil.example" }, ErrDomain},
		{"other URI", func(e *Expect) { e.URI = "http://localhost:4361/connect?t=other" }, ErrURI},
		{"chain not accepted", func(e *Expect) { e.ChainIDs = []uint64{1} }, ErrChain},
		{"other request id", func(e *Expect) { e.RequestID = "req-2" }, ErrRequestID},
		{"expired", func(e *Expect) { e.Now = m.ExpirationTime }, ErrExpired},
		{"too old", func(e *Expect) { e.Now = m.IssuedAt.Add(11 * time.Minute) }, ErrExpired},
		{"not before", func(e *Expect) { e.Now = m.NotBefore.Add(-2 * time.Minute) }, ErrNotYetValid},
		{"issued in the future", func(e *Expect) { e.Now = m.IssuedAt.Add(-2 * time.Minute); e.MaxAge = 0 }, ErrNotYetValid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := ok
			tt.change(&e)
			if err := m.Check(e); !errors.Is(err, tt.want) {
				t.Errorf("Check = %v, want %v", err, tt.want)
			}
		})
	}
}

// FuzzParse checks that Parse never panics, that what it accepts prints back to a message it
// accepts again with the same fields, and that an accepted message holds the ABNF's promises.
func FuzzParse(f *testing.F) {
	for _, s := range []string{eipExample, eipExampleScheme, allFields, "", "x wants you to sign in with your Ethereum account:\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		m, err := Parse(text)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if strings.Contains(m.Statement, "\n") || len(m.Nonce) < 8 || m.Version != "1" || m.ChainID == 0 {
			t.Fatalf("accepted a message that breaks the ABNF: %+v", m)
		}
		again, err := Parse(m.String())
		if err != nil {
			t.Fatalf("Parse(String()) = %v\n%q", err, m.String())
		}
		assertSame(t, again, m)
	})
}

// TestSanitizeStatement: any text, a paywall's name say, becomes a statement Parse accepts,
// keeping what EIP-4361 allows.
func TestSanitizeStatement(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"Demo App", "Demo App"},
		{"R&D: [beta] (v2)!", "R&D: [beta] (v2)!"},
		{"Café\nBar|Baz", "Caf Bar Baz"},
		{"  \t ", ""},
		{`a"b<c>d\e^f` + "`g{h}", "a b c d e f g h"},
	} {
		got := SanitizeStatement(tt.in)
		if got != tt.want {
			t.Errorf("SanitizeStatement(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if got == "" {
			continue
		}
		m, err := Parse(strings.Replace(eipExample, "I accept the ExampleOrg Terms of Service: https://example.com/tos", got, 1))
		if err != nil || m.Statement != got {
			t.Errorf("a message with statement %q: %+v %v", got, m.Statement, err)
		}
	}
}
