package pricing

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// ErrBadModels wraps every problem with a models file.
var ErrBadModels = errors.New("pricing: bad models file")

// maxModelsFile bounds how much of a models file is read; OpenRouter's whole listing is a few
// MB.
const maxModelsFile = 16 << 20

// maxModelID bounds a model id; a longer one is not a model but a mistake.
const maxModelID = 256

// ModelPrice is one model's base price.
type ModelPrice struct {
	Model string // the id requests name, e.g. "openai/gpt-4o-mini"
	Name  string // a display name, may be ""
	Price Price
}

// SkippedModel is a model of a models file that cannot be priced per token.
type SkippedModel struct {
	Model  string
	Reason string
}

// ModelsFile is what ParseOpenRouterFile read.
type ModelsFile struct {
	Models  []ModelPrice
	Skipped []SkippedModel
}

// ParseOpenRouterModels reads the JSON of OpenRouter's GET /api/v1/models and returns the
// models it can price; see ParseOpenRouterFile for the rules.
// It can return: ErrBadModels.
func ParseOpenRouterModels(r io.Reader) ([]ModelPrice, error) {
	f, err := ParseOpenRouterFile(r)
	return f.Models, err
}

// ParseOpenRouterFile reads the JSON of OpenRouter's GET /api/v1/models:
//
//	{"data": [{"id": "openai/gpt-4o-mini", "name": "…", "pricing": {"prompt": "0.00000015",
//	  "completion": "0.0000006", "request": "0", "input_cache_read": "0.000000075", …}}, …]}
//
// Prices there are USD per token (per request for "request") as decimal strings; they are
// converted exactly to USDC per million tokens (USDC is taken at par with USD). The fields
// used are prompt and completion (required), request, input_cache_read, input_cache_write and
// internal_reasoning; a "discount" d multiplies every rate by 1 − d. internal_reasoning of 0
// is read as "unset" (reasoning billed at the completion rate), because OpenRouter charges
// reasoning tokens as output tokens and lists 0 for models that do not price them apart.
// Image, audio and web-search prices are not used: requests are metered by tokens only.
//
// A model with a negative price (OpenRouter lists "-1" for routers whose price varies) is
// skipped and named in Skipped. Anything else malformed — bad JSON, a missing id or
// required price, a price that is not a decimal, a duplicate id — fails the whole file with
// an error naming the model and the field, so that a half-read file is never imported.
//
// It can return: ErrBadModels.
func ParseOpenRouterFile(r io.Reader) (ModelsFile, error) {
	raw, err := io.ReadAll(io.LimitReader(r, maxModelsFile+1))
	if err != nil {
		return ModelsFile{}, fmt.Errorf("%w: read: %w", ErrBadModels, err)
	}
	if len(raw) > maxModelsFile {
		return ModelsFile{}, fmt.Errorf("%w: larger than %d bytes", ErrBadModels, maxModelsFile)
	}
	var doc struct {
		Data *[]struct {
			ID      string                     `json:"id"`
			Name    string                     `json:"name"`
			Pricing map[string]json.RawMessage `json:"pricing"`
		} `json:"data"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return ModelsFile{}, fmt.Errorf("%w: %w", ErrBadModels, err)
	}
	if dec.More() {
		return ModelsFile{}, fmt.Errorf("%w: trailing data after the JSON document", ErrBadModels)
	}
	if doc.Data == nil {
		return ModelsFile{}, fmt.Errorf(`%w: no "data" array`, ErrBadModels)
	}
	var out ModelsFile
	seen := make(map[string]bool, len(*doc.Data))
	for i, m := range *doc.Data {
		switch {
		case m.ID == "":
			return ModelsFile{}, fmt.Errorf("%w: data[%d] has no id", ErrBadModels, i)
		case len(m.ID) > maxModelID:
			return ModelsFile{}, fmt.Errorf("%w: data[%d]: id longer than %d characters", ErrBadModels, i, maxModelID)
		case seen[m.ID]:
			return ModelsFile{}, fmt.Errorf("%w: model %q appears twice", ErrBadModels, m.ID)
		case m.Pricing == nil:
			return ModelsFile{}, fmt.Errorf("%w: model %q has no pricing", ErrBadModels, m.ID)
		}
		seen[m.ID] = true
		p, skip, err := openRouterPrice(m.Pricing)
		if err != nil {
			return ModelsFile{}, fmt.Errorf("%w: model %q: %w", ErrBadModels, m.ID, err)
		}
		if skip != "" {
			out.Skipped = append(out.Skipped, SkippedModel{Model: m.ID, Reason: skip})
			continue
		}
		out.Models = append(out.Models, ModelPrice{Model: m.ID, Name: m.Name, Price: p})
	}
	return out, nil
}

// openRouterPrice converts one "pricing" object. skip is non-empty when the model has a
// negative (variable) price.
func openRouterPrice(fields map[string]json.RawMessage) (p Price, skip string, err error) {
	get := func(name string, required bool) (Decimal, error) {
		raw, ok := fields[name]
		if !ok || string(raw) == "null" {
			if required {
				return Decimal{}, fmt.Errorf("pricing.%s is missing", name)
			}
			return Decimal{}, nil
		}
		d, err := jsonDecimal(raw)
		if err != nil {
			return Decimal{}, fmt.Errorf("pricing.%s: %w", name, err)
		}
		return d, nil
	}
	type slot struct {
		name     string
		required bool
		dst      *Decimal
	}
	slots := []slot{
		{"prompt", true, &p.Input}, {"completion", true, &p.Output},
		{"request", false, &p.Request}, {"input_cache_read", false, &p.CachedInput},
		{"input_cache_write", false, &p.CacheWrite}, {"internal_reasoning", false, &p.Reasoning},
	}
	for _, s := range slots {
		d, err := get(s.name, s.required)
		if err != nil {
			return Price{}, "", err
		}
		if d.Sign() < 0 {
			return Price{}, fmt.Sprintf("variable price (pricing.%s is %s)", s.name, d), nil
		}
		*s.dst = d
	}
	if p.Reasoning.IsSet() && p.Reasoning.Sign() == 0 {
		p.Reasoning = Decimal{}
	}
	discount, err := get("discount", false)
	if err != nil {
		return Price{}, "", err
	}
	if discount.Sign() < 0 || discount.Cmp(NewDecimal(1, 0)) >= 0 {
		return Price{}, "", fmt.Errorf("pricing.discount must be in [0, 1), got %s", discount)
	}
	keep := NewDecimal(1, 0).sub(discount)
	for _, s := range slots {
		if s.dst.IsSet() {
			*s.dst = s.dst.mul(keep).Shift(6) // USD per token → USDC per million tokens
		}
	}
	return p, "", nil
}

// jsonDecimal reads a JSON string holding a decimal ("0.000001") or a bare JSON number,
// exactly (never through float64).
func jsonDecimal(raw json.RawMessage) (Decimal, error) {
	var s string
	if len(raw) > 0 && raw[0] == '"' {
		if err := json.Unmarshal(raw, &s); err != nil {
			return Decimal{}, err
		}
	} else {
		s = string(raw)
	}
	return ParseDecimal(s)
}
