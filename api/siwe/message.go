// Package siwe parses, checks and verifies Sign-In with Ethereum messages (EIP-4361).
//
// No Go SIWE library is available to us, so this is a small line-based parser of the ABNF in
// EIP-4361, a field check against what the relying party expects (domain, URI, chain, nonce,
// validity window), and signature verification: EIP-191 personal_sign signatures are recovered
// with go-ethereum's accounts.TextHash and crypto.SigToPub; contract wallets are asked through
// EIP-1271 isValidSignature over an eth_call seam.
package siwe

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"
)

// ErrMalformed wraps every reason a text is not a valid EIP-4361 message.
var ErrMalformed = errors.New("siwe: malformed message")

// headerSuffix ends the first line of every message.
const headerSuffix = " wants you to sign in with your Ethereum account:"

// Message is a parsed EIP-4361 message. Optional time fields are zero when absent.
type Message struct {
	Scheme         string // optional URI scheme before the domain ("https"), "" when absent
	Domain         string // RFC 3986 authority requesting the signature
	Address        common.Address
	Statement      string // optional, one line
	URI            string
	Version        string // always "1"
	ChainID        uint64
	Nonce          string
	IssuedAt       time.Time
	ExpirationTime time.Time // zero when absent
	NotBefore      time.Time // zero when absent
	RequestID      string    // optional; "" when absent
	Resources      []string
}

// String returns the message in EIP-4361 form, which is what a wallet signs. Parse(m.String())
// gives m back for every m that Parse returned.
func (m Message) String() string {
	var b strings.Builder
	if m.Scheme != "" {
		b.WriteString(m.Scheme + "://")
	}
	b.WriteString(m.Domain + headerSuffix + "\n")
	b.WriteString(m.Address.Hex() + "\n\n")
	if m.Statement != "" {
		b.WriteString(m.Statement + "\n")
	}
	b.WriteString("\n")
	b.WriteString("URI: " + m.URI + "\n")
	b.WriteString("Version: " + m.Version + "\n")
	b.WriteString("Chain ID: " + strconv.FormatUint(m.ChainID, 10) + "\n")
	b.WriteString("Nonce: " + m.Nonce + "\n")
	b.WriteString("Issued At: " + m.IssuedAt.Format(time.RFC3339Nano))
	if !m.ExpirationTime.IsZero() {
		b.WriteString("\nExpiration Time: " + m.ExpirationTime.Format(time.RFC3339Nano))
	}
	if !m.NotBefore.IsZero() {
		b.WriteString("\nNot Before: " + m.NotBefore.Format(time.RFC3339Nano))
	}
	if m.RequestID != "" {
		b.WriteString("\nRequest ID: " + m.RequestID)
	}
	if len(m.Resources) > 0 {
		b.WriteString("\nResources:")
		for _, r := range m.Resources {
			b.WriteString("\n- " + r)
		}
	}
	return b.String()
}

// maxMessageBytes bounds what Parse reads; real messages are a few hundred bytes.
const maxMessageBytes = 16 << 10

// Parse parses an EIP-4361 message strictly: lines end in LF only, fields come in the order the
// ABNF gives, the address is EIP-55 checksummed, and nothing follows the last field.
//
// One leniency: with no statement, the ABNF asks for two empty lines after the address, but
// some wallets' libraries write one; both are accepted.
//
// It can return: ErrMalformed (wrapped, with the line and the reason).
func Parse(text string) (Message, error) {
	if len(text) > maxMessageBytes {
		return Message{}, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, maxMessageBytes)
	}
	if strings.ContainsRune(text, '\r') {
		return Message{}, fmt.Errorf("%w: lines must end with LF, not CRLF", ErrMalformed)
	}
	p := parser{lines: strings.Split(text, "\n")}
	var m Message
	if err := p.header(&m); err != nil {
		return Message{}, err
	}
	if err := p.address(&m); err != nil {
		return Message{}, err
	}
	if err := p.statement(&m); err != nil {
		return Message{}, err
	}
	if err := p.fields(&m); err != nil {
		return Message{}, err
	}
	return m, nil
}

// parser walks the message line by line.
type parser struct {
	lines []string
	i     int // index of the next line
}

func (p *parser) errf(format string, args ...any) error {
	return fmt.Errorf("%w: line %d: %s", ErrMalformed, p.i+1, fmt.Sprintf(format, args...))
}

// next returns the next line, or false at the end of the text.
func (p *parser) next() (string, bool) {
	if p.i >= len(p.lines) {
		return "", false
	}
	return p.lines[p.i], true
}

func (p *parser) header(m *Message) error {
	line, _ := p.next()
	rest, ok := strings.CutSuffix(line, headerSuffix)
	if !ok {
		return p.errf("the first line must end with %q", strings.TrimPrefix(headerSuffix, " "))
	}
	if scheme, domain, ok := strings.Cut(rest, "://"); ok {
		if !validScheme(scheme) {
			return p.errf("invalid scheme %q", scheme)
		}
		m.Scheme, rest = scheme, domain
	}
	if !validAuthority(rest) {
		return p.errf("invalid domain %q (want an RFC 3986 authority such as example.com:8080)", rest)
	}
	m.Domain = rest
	p.i++
	return nil
}

func (p *parser) address(m *Message) error {
	line, ok := p.next()
	if !ok {
		return p.errf("missing address")
	}
	if len(line) != 42 || !strings.HasPrefix(line, "0x") || !common.IsHexAddress(line) {
		return p.errf("invalid address %q (want 0x and 40 hex digits)", line)
	}
	a := common.HexToAddress(line)
	if a.Hex() != line {
		return p.errf("address %q is not EIP-55 checksummed (want %s)", line, a.Hex())
	}
	m.Address = a
	p.i++
	if l, ok := p.next(); !ok || l != "" {
		return p.errf("want an empty line after the address")
	}
	p.i++
	return nil
}

func (p *parser) statement(m *Message) error {
	line, ok := p.next()
	if !ok {
		return p.errf("missing URI")
	}
	after := ""
	if p.i+1 < len(p.lines) {
		after = p.lines[p.i+1]
	}
	switch {
	case line == "":
		// No statement, as the ABNF writes it: a second empty line.
		p.i++
	case after == "":
		if !validStatement(line) {
			return p.errf("statement has characters outside RFC 3986 reserved/unreserved and space")
		}
		m.Statement = line
		p.i += 2
	case strings.HasPrefix(line, "URI: "):
		// No statement, written with a single empty line (the accepted leniency).
	default:
		return p.errf("want an empty line after the statement")
	}
	return nil
}

// field reads the next line if it starts with name+": " and reports whether it did.
func (p *parser) field(name string) (string, bool) {
	line, ok := p.next()
	if !ok {
		return "", false
	}
	v, ok := strings.CutPrefix(line, name+": ")
	if !ok {
		return "", false
	}
	p.i++
	return v, true
}

func (p *parser) required(name string) (string, error) {
	v, ok := p.field(name)
	if !ok {
		return "", p.errf("want %q", name+": …")
	}
	return v, nil
}

func (p *parser) fields(m *Message) error {
	v, err := p.required("URI")
	if err != nil {
		return err
	}
	if !validURI(v) {
		return p.errf("invalid URI %q (want an absolute RFC 3986 URI)", v)
	}
	m.URI = v
	if v, err = p.required("Version"); err != nil {
		return err
	}
	if v != "1" {
		return p.errf("unsupported version %q (want 1)", v)
	}
	m.Version = v
	if v, err = p.required("Chain ID"); err != nil {
		return err
	}
	if m.ChainID, err = parseChainID(v); err != nil {
		return p.errf("%v", err)
	}
	if v, err = p.required("Nonce"); err != nil {
		return err
	}
	if !validNonce(v) {
		return p.errf("nonce must be at least 8 letters or digits, got %q", v)
	}
	m.Nonce = v
	if v, err = p.required("Issued At"); err != nil {
		return err
	}
	if m.IssuedAt, err = parseTime(v); err != nil {
		return p.errf("Issued At: %v", err)
	}
	if v, ok := p.field("Expiration Time"); ok {
		if m.ExpirationTime, err = parseTime(v); err != nil {
			return p.errf("Expiration Time: %v", err)
		}
	}
	if v, ok := p.field("Not Before"); ok {
		if m.NotBefore, err = parseTime(v); err != nil {
			return p.errf("Not Before: %v", err)
		}
	}
	if v, ok := p.field("Request ID"); ok {
		if !validRequestID(v) {
			return p.errf("Request ID has characters outside RFC 3986 pchar")
		}
		m.RequestID = v
	}
	if line, ok := p.next(); ok && line == "Resources:" {
		p.i++
		for {
			line, ok := p.next()
			if !ok {
				break
			}
			r, ok := strings.CutPrefix(line, "- ")
			if !ok || !validURI(r) {
				return p.errf("a resource must be \"- \" and an absolute URI, got %q", line)
			}
			m.Resources = append(m.Resources, r)
			p.i++
		}
	}
	if line, ok := p.next(); ok {
		return p.errf("unexpected %q (fields must come in EIP-4361 order, with nothing after them)", truncate(line, 40))
	}
	return nil
}

func parseChainID(s string) (uint64, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("chain id must be digits, got %q", s)
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("chain id out of range: %q", s)
	}
	return n, nil
}

// parseTime parses an RFC 3339 date-time. Go's parser accepts a few things RFC 3339 does not
// (such as a one-digit hour), so the text must also have the RFC's fixed shape.
func parseTime(s string) (time.Time, error) {
	if len(s) < len("2006-01-02T15:04:05Z") || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' || s[16] != ':' {
		return time.Time{}, fmt.Errorf("not an RFC 3339 date-time: %q", s)
	}
	t, err := time.Parse(time.RFC3339Nano, strings.ToUpper(s))
	if err != nil {
		return time.Time{}, fmt.Errorf("not an RFC 3339 date-time: %q", s)
	}
	return t, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Character classes of RFC 3986.

func isAlpha(c byte) bool      { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool      { return c >= '0' && c <= '9' }
func isHex(c byte) bool        { return isDigit(c) || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }
func isUnreserved(c byte) bool { return isAlpha(c) || isDigit(c) || strings.IndexByte("-._~", c) >= 0 }
func isSubDelim(c byte) bool   { return strings.IndexByte("!$&'()*+,;=", c) >= 0 }
func isGenDelim(c byte) bool   { return strings.IndexByte(":/?#[]@", c) >= 0 }

func validScheme(s string) bool {
	if s == "" || !isAlpha(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlpha(c) && !isDigit(c) && c != '+' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// validPct reports whether every '%' in s starts a percent-encoded octet, and every other byte
// satisfies ok.
func validPct(s string, ok func(byte) bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' {
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return false
			}
			i += 2
			continue
		}
		if !ok(c) {
			return false
		}
	}
	return true
}

func validAuthority(s string) bool {
	if s == "" {
		return false
	}
	if !validPct(s, func(c byte) bool {
		return isUnreserved(c) || isSubDelim(c) || c == ':' || c == '@' || c == '[' || c == ']'
	}) {
		return false
	}
	u, err := url.Parse("http://" + s)
	return err == nil && u.Host != "" && u.Path == "" && u.RawQuery == "" && u.Fragment == ""
}

// isStatementChar reports whether c may appear in a statement: RFC 3986 reserved and
// unreserved characters, and space.
func isStatementChar(c byte) bool {
	return isUnreserved(c) || isSubDelim(c) || isGenDelim(c) || c == ' '
}

func validStatement(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isStatementChar(s[i]) {
			return false
		}
	}
	return true
}

// SanitizeStatement makes text fit a message's statement: every byte EIP-4361 does not allow
// there (anything but RFC 3986 reserved and unreserved characters and space: line breaks and
// non-ASCII too) becomes a space, and runs of spaces one.
func SanitizeStatement(text string) string {
	var b strings.Builder
	for i := 0; i < len(text); i++ {
		if c := text[i]; isStatementChar(c) {
			b.WriteByte(c)
		} else {
			b.WriteByte(' ')
		}
	}
	return strings.Join(strings.Fields(b.String()), " ")
}

func validNonce(s string) bool {
	if len(s) < 8 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isAlpha(s[i]) && !isDigit(s[i]) {
			return false
		}
	}
	return true
}

func validRequestID(s string) bool {
	return validPct(s, func(c byte) bool { return isUnreserved(c) || isSubDelim(c) || c == ':' || c == '@' })
}

// validURI reports whether s is an absolute URI made of RFC 3986 characters.
func validURI(s string) bool {
	if !validPct(s, func(c byte) bool { return isUnreserved(c) || isSubDelim(c) || isGenDelim(c) }) {
		return false
	}
	u, err := url.Parse(s)
	return err == nil && u.Scheme != "" && validScheme(u.Scheme) && (u.Opaque != "" || u.Host != "" || u.Path != "")
}
