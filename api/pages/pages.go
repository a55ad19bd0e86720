// Package pages holds the hosted pages' files (plain HTML, one script, one style sheet; no
// build step), embedded into the binary and served by package api.
package pages

import "embed"

// FS has connect.html, topup.html, wallet.html, tollgate.js and tollgate.css at its root.
//
//go:embed *.html *.js *.css
var FS embed.FS
