package main

import (
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// newVersionCommand prints what the binary was built from: the module
// version, the VCS revision and time (and whether the tree had changes),
// and the Go version, from the build information Go records.
func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of pec: module version, VCS revision and time, Go version",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), versionLine())
			return nil
		},
	}
}

// versionLine is "pec VERSION (revision REV, TIME[, modified]) GOVERSION".
func versionLine() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "pec (no build information)"
	}
	version := bi.Main.Version
	if version == "" {
		version = "(devel)"
	}
	var rev, at, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = ", modified"
			}
		}
	}
	vcs := "no VCS information"
	if rev != "" {
		vcs = "revision " + rev
		if at != "" {
			vcs += ", " + at
		}
		vcs += modified
	}
	return fmt.Sprintf("pec %s (%s) %s", version, vcs, bi.GoVersion)
}
