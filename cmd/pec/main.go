// Command pec is the PEC platform in one binary: `pec serve` runs a node,
// `pec init` prepares a development one, and the other subcommands are
// clients of its services (`pec ts request`, `pec ts verify`).
//
// Exit status, a contract for scripts: 0 success (or valid), 1 failure (or
// invalid), 2 usage or input error — the reason is on stderr.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1 // invalid token, a service that failed
	exitUsage   = 2 // bad command line, unreadable or malformed input
)

// exitError carries the exit status of a failed command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageError is a mistake in the command line or its input: exit 2.
func usageError(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// inputError wraps a failure to read or decode the caller's input: exit 2.
func inputError(err error) error { return &exitError{code: exitUsage, err: err} }

// failure is an outcome the caller asked about and did not get (an invalid
// token, a refusal): exit 1.
func failure(err error) error { return &exitError{code: exitFailure, err: err} }

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCommand(stdin, stdout, stderr)
	failuresExit1(root) // after every AddCommand
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	if err == nil {
		return exitOK
	}
	if ce, ok := errors.AsType[*ConfigError](err); ok {
		// "pec.yaml:12: listen.max_in_flight: ...", one fault a line, as
		// compilers print them: the file is the prefix.
		fmt.Fprintln(stderr, ce.Error())
	} else {
		fmt.Fprintf(stderr, "pec: %v\n", err)
	}
	if e, ok := errors.AsType[*exitError](err); ok {
		if e.code == exitUsage && isUsageMistake(err) {
			fmt.Fprintf(stderr, "usage: %s\n", cmd.UseLine())
		}
		return e.code
	}
	// Cobra's own errors: an unknown command, a missing argument, a
	// required flag. The commands' own failures are exitErrors (see
	// failuresExit1): they never print a usage line.
	fmt.Fprintf(stderr, "usage: %s\n", cmd.UseLine())
	return exitUsage
}

// failuresExit1 makes an error that a command returns without an exit
// status a failure (exit 1, no usage line), in cmd and its subcommands:
// a runtime failure (a port in use, a node already running, a refused
// request) is not a mistake in the command line. Usage and input errors
// say so (usageError, inputError); cobra's own errors do not come through
// RunE.
func failuresExit1(cmd *cobra.Command) {
	for _, c := range cmd.Commands() {
		failuresExit1(c)
	}
	wrap := func(f func(*cobra.Command, []string) error) func(*cobra.Command, []string) error {
		if f == nil {
			return nil
		}
		return func(c *cobra.Command, a []string) error {
			err := f(c, a)
			if _, ok := errors.AsType[*exitError](err); err != nil && !ok {
				return failure(err)
			}
			return err
		}
	}
	cmd.RunE = wrap(cmd.RunE)
	cmd.PreRunE = wrap(cmd.PreRunE)
	cmd.PostRunE = wrap(cmd.PostRunE)
}

type usageMistake struct{ error }

func isUsageMistake(err error) bool {
	_, ok := errors.AsType[usageMistake](err)
	return ok
}

// argsError makes cobra's argument checks exit 2 with a usage line.
func args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if err := check(cmd, a); err != nil {
			return &exitError{code: exitUsage, err: usageMistake{err}}
		}
		return nil
	}
}

func newRootCommand(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "pec",
		Short:         "PEC, the trusted-exchange platform for public administrations",
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, a []string) error {
			// A bare pec lists its commands, on stderr: it is still a
			// usage mistake (exit 2).
			fmt.Fprint(cmd.ErrOrStderr(), cmd.UsageString())
			return &exitError{code: exitUsage, err: usageMistake{errors.New("a command is required (pec --help lists them)")}}
		},
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &exitError{code: exitUsage, err: usageMistake{err}}
	})
	root.AddCommand(newInitCommand(), newServeCommand(), newTSCommand())
	root.AddCommand(newValidateCommand())
	root.AddCommand(newProofCommand())
	root.AddCommand(newBackupCommand(), newRestoreCommand())
	root.AddCommand(newSignCommand(), newVerifyCommand())
	root.AddCommand(newPartnerCommand(), newExchangeCommand())
	root.AddCommand(newVersionCommand())
	root.AddCommand(newCACommand())
	root.AddCommand(newKeysCommand())
	registerCompletions(root)
	return root
}

// oneLine keeps a multi-line error readable on one stderr line where a
// script greps for it.
func oneLine(s string) string { return strings.ReplaceAll(s, "\n", "; ") }
