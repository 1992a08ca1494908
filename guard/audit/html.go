package audit

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
)

// reportPage is the HTML report: the report's data inline as JSON, drawn
// by the inline script as a table and SVG plots.
//
//go:embed report.html
var reportPage string

// WriteHTML writes a single self-contained HTML report: the data inline as
// JSON, plots drawn as inline SVG by an inline script, nothing fetched from
// the network. When the script has drawn every plot it sets
// data-rendered="N" on <body> (N plots) so tests and tools can tell.
// html/template escapes the data for the script element it stands in, and
// the script puts every string into the page as text, never as markup.
func (r *Report) WriteHTML(w io.Writer) error {
	page, err := template.New("report.html").Parse(reportPage)
	if err != nil {
		return fmt.Errorf("audit: HTML template: %w", err)
	}
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("audit: encoding report: %w", err)
	}
	if err := page.Execute(w, json.RawMessage(data)); err != nil {
		return fmt.Errorf("audit: writing HTML: %w", err)
	}
	return nil
}
