package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/urfave/cli/v3"
)

func outputFlag() cli.Flag {
	return &cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "text", Usage: "output format: text or json",
		Validator: func(s string) error {
			if s != "text" && s != "json" {
				return usagef("--output must be text or json")
			}
			return nil
		}}
}

// field is one line of text output.
type field struct{ name, value string }

// emit writes v as indented JSON, or fields as aligned "name: value" lines.
func emit(w io.Writer, format string, v any, fields []field) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	for _, f := range fields {
		if f.value == "" {
			f.value = "-"
		}
		fmt.Fprintf(tw, "%s:\t%s\n", f.name, f.value)
	}
	return tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
