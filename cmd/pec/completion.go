package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"pec/certvalidation"
	"pec/evidence"
	"pec/middleoffice"
)

// Shell completion. Cobra gives `pec completion bash|zsh|fish|powershell`
// (the script) and the hidden `pec __complete ARGS...` the scripts call;
// registerCompletions adds the values of the flags that take one of a
// closed set, so that `pec validate --purpose <TAB>` offers the purposes.
// Flags with no completion here complete file names, as shells do.

// devConfig is the configuration that completion reads when the command
// line names none: the README's development node.
const devConfig = "pec-dev/pec.yaml"

// completion is a flag's values: each a name and what it means (shells
// that show descriptions show it beside the name).
type completion func(cmd *cobra.Command) []string

// flagCompletions maps a flag name to its values, on every command that
// has a flag of that name, or "COMMAND PATH --flag" to those of one command.
var flagCompletions = map[string]completion{
	"profile":      profileCompletions,
	"sign-profile": func(cmd *cobra.Command) []string { return append(profileCompletions(cmd), "*\tevery profile") },
	"purpose":      fixed(purposeCompletions()...),
	"hash":         fixed(sortedKeys(hashNames)...),
	"revocation": fixed(
		string(certvalidation.RevocationNone)+"\tdo not check revocation",
		string(certvalidation.RevocationPrefer)+"\tcheck; an unknown status is a warning",
		string(certvalidation.RevocationRequire)+"\tcheck; an unknown status is invalid",
	),
	"role": fixed(
		string(middleoffice.RolePartner)+"\tan administration's information system: exchanges",
		string(middleoffice.RoleAgent)+"\tan instructing service: receives, answers",
		string(middleoffice.RoleAuditor)+"\treads every proof",
		string(middleoffice.RoleAdmin)+"\tmanages the directory",
	),
	"channel": fixed(
		middleoffice.ChannelPull+"\tthe partner lists its inbox and downloads",
		middleoffice.ChannelWebhook+"\tpushed to the partner's HTTPS endpoint",
		middleoffice.ChannelMail+"\tS/MIME to the partner's mail addresses",
	),
	// The platform's events (a family, "timestamp.", matches too; other
	// types are accepted from newer logs).
	"pec proof list --type": fixed(
		string(evidence.SubmissionAccepted), string(evidence.SubmissionRejected),
		string(evidence.Delivered), string(evidence.Retrieved), string(evidence.Acknowledged),
		string(evidence.DeliveryFailed), string(evidence.Expired),
		string(evidence.SignatureCreated), string(evidence.SignatureRefused),
		string(evidence.TimestampIssued), string(evidence.MailAccepted), string(evidence.MailDelivered),
		string(evidence.AdminAction), string(evidence.ProofRead),
	),
}

// registerCompletions walks the command tree and registers, on each
// command, the completion of the flags it has.
func registerCompletions(root *cobra.Command) {
	// Cobra adds its completion command when it runs; made now, it gets
	// the exit contract: without a shell, or with an unknown one, exit 2.
	root.InitDefaultCompletionCmd()
	if c, _, err := root.Find([]string{"completion"}); err == nil && c != root {
		c.Args = args(cobra.NoArgs)
		c.RunE = func(cmd *cobra.Command, _ []string) error {
			fmt.Fprint(cmd.ErrOrStderr(), cmd.UsageString())
			return &exitError{code: exitUsage, err: usageMistake{errors.New("a shell is required: bash, zsh, fish or powershell")}}
		}
	}
	var walk func(*cobra.Command)
	walk = func(cmd *cobra.Command) {
		for key, values := range flagCompletions {
			name := key
			if path, flag, ok := strings.Cut(key, " --"); ok {
				if path != cmd.CommandPath() {
					continue
				}
				name = flag
			}
			if cmd.LocalNonPersistentFlags().Lookup(name) == nil {
				continue
			}
			_ = cmd.RegisterFlagCompletionFunc(name, func(cmd *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
				return withPrefix(values(cmd), toComplete), cobra.ShellCompDirectiveNoFileComp
			})
		}
		if cmd.LocalNonPersistentFlags().Lookup("listen") != nil {
			// NAME=HOST:PORT: the names, then the shell waits for the address.
			_ = cmd.RegisterFlagCompletionFunc("listen", func(_ *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
				var names []string
				for _, n := range serviceNames {
					names = append(names, n+"=")
				}
				return withPrefix(names, toComplete), cobra.ShellCompDirectiveNoSpace | cobra.ShellCompDirectiveNoFileComp
			})
		}
		if cmd.LocalNonPersistentFlags().Lookup("config") != nil {
			_ = cmd.RegisterFlagCompletionFunc("config", cobra.FixedCompletions([]string{"yaml", "yml"}, cobra.ShellCompDirectiveFilterFileExt))
		}
		if cmd.LocalNonPersistentFlags().Lookup("dir") != nil {
			_ = cmd.RegisterFlagCompletionFunc("dir", cobra.FixedCompletions(nil, cobra.ShellCompDirectiveFilterDirs))
		}
		for _, sub := range cmd.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// profileCompletions are the signature profiles of the configuration that
// --config names, else of ./pec-dev/pec.yaml: read loosely (only the
// profiles' names and formats), for a config being edited may not load.
// None when there is no such file.
func profileCompletions(cmd *cobra.Command) []string {
	path := devConfig
	if f := cmd.Flags().Lookup("config"); f != nil && f.Value.String() != "" {
		path = f.Value.String()
	}
	data, err := os.ReadFile(filepath.Clean(path))
	if err != nil {
		cobra.CompDebugln("pec: profiles: "+err.Error(), false)
		return nil
	}
	var file struct {
		Signing struct {
			Profiles []struct {
				Name      string `yaml:"name"`
				Format    string `yaml:"format"`
				Timestamp bool   `yaml:"timestamp"`
			} `yaml:"profiles"`
		} `yaml:"signing"`
	}
	if err := yaml.Unmarshal(data, &file); err != nil {
		cobra.CompDebugln("pec: profiles: "+path+": "+err.Error(), false)
		return nil
	}
	var out []string
	for _, p := range file.Signing.Profiles {
		if p.Name == "" || strings.ContainsAny(p.Name, "\t\n") {
			continue
		}
		format := map[string]string{"": "CAdES", "cades": "CAdES", "pades": "PAdES"}[strings.ToLower(p.Format)]
		level := "B-B"
		if p.Timestamp {
			level = "B-T"
		}
		out = append(out, p.Name+"\t"+strings.TrimSpace(format+" "+level))
	}
	return out
}

func purposeCompletions() []string {
	what := map[certvalidation.Purpose]string{
		certvalidation.PurposeAny:             "no key usage requirement",
		certvalidation.PurposeServerAuth:      "a TLS server",
		certvalidation.PurposeClientAuth:      "a TLS client",
		certvalidation.PurposeEmailProtection: "S/MIME",
		certvalidation.PurposeTimeStamping:    "a time-stamping authority",
		certvalidation.PurposeDocumentSigning: "a document signer",
	}
	var out []string
	for _, p := range certvalidation.AllPurposes {
		out = append(out, string(p)+"\t"+what[p])
	}
	return out
}

func fixed(values ...string) completion {
	return func(*cobra.Command) []string { return values }
}

// withPrefix keeps the values (NAME or NAME\tDESCRIPTION) whose name
// starts with prefix: cobra leaves the filtering to its callee.
func withPrefix(values []string, prefix string) []string {
	var out []string
	for _, v := range values {
		if strings.HasPrefix(v, prefix) {
			out = append(out, v)
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
