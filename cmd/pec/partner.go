package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"pec/certvalidation"
	"pec/gateway/api"
	"pec/middleoffice"
)

// The partner commands drive the administration API (/v1/partners) of a
// running node with an admin client certificate.

// apiFlags are the connection flags every API client command shares.
type apiFlags struct {
	api, certFile, keyFile string
	roots                  []string
	timeout                time.Duration
}

func (f *apiFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.api, "api", "", "the node's API (https://HOST:PORT)")
	fl.StringVar(&f.certFile, "cert", "", "client certificate with the admin role (PEM)")
	fl.StringVar(&f.keyFile, "key", "", "its private key (PEM)")
	fl.StringArrayVar(&f.roots, "roots", nil, "roots the node's TLS certificate must chain to (PEM; repeatable; default: the system's)")
	fl.DurationVar(&f.timeout, "timeout", 30*time.Second, "give up after this long")
}

func (f *apiFlags) client() (*api.Client, error) {
	if f.api == "" || f.certFile == "" || f.keyFile == "" {
		return nil, &exitError{code: exitUsage, err: usageMistake{errors.New("--api URL --cert C.pem --key C.key are required")}}
	}
	return apiClient(f.api, f.certFile, f.keyFile, f.roots, f.timeout)
}

func newPartnerCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "partner list|add|update|disable|enable",
		Short: "Manage the directory's partners through a node's API (admin role)",
		Long: `partner lists and changes the partners of a running node's directory through its administration
API (/v1/partners), over mutual TLS with a client certificate whose partner has the admin role. Changes
hold from the next request of every connection, survive restarts, and are each an admin.action record of
the evidence log, whose id add, update, disable and enable print on stdout. Exit status: 0 done, 1 refused
(403) or failed, 2 usage or input error (an invalid partner, an unknown id, an id already taken).`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return &exitError{code: exitUsage, err: usageMistake{errors.New("a subcommand is required: list, add, update, disable, enable")}}
		},
	}
	cmd.AddCommand(newPartnerListCommand(), newPartnerAddCommand(false), newPartnerAddCommand(true),
		newPartnerDisableCommand(true), newPartnerDisableCommand(false))
	return cmd
}

func newPartnerListCommand() *cobra.Command {
	var (
		conn   apiFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "list --api URL --cert C.pem --key C.key [--roots ROOT.pem] [--json]",
		Short: "Print the partners: ID, NAME, ROLES, CHANNEL, STATUS, REVISION",
		Long: `list prints the directory's partners sorted by id under a header: ID, NAME, ROLES (comma-separated),
CHANNEL, STATUS (enabled or disabled) and REVISION (the changes made through the API; 0: as pec.yaml
says). --json prints the API's answer, {"partners": [...]}, every field included.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := conn.client()
			if err != nil {
				return err
			}
			list, err := c.Partners(cmd.Context())
			if err != nil {
				return apiError(err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(list)
			}
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tROLES\tCHANNEL\tSTATUS\tREVISION")
			for _, p := range list.Partners {
				roles := make([]string, len(p.Roles))
				for i, r := range p.Roles {
					roles[i] = string(r)
				}
				status := "enabled"
				if p.Disabled {
					status = "disabled"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", p.ID, p.Name, strings.Join(roles, ","), p.Channel.Type, status, p.Revision)
			}
			return tw.Flush()
		},
	}
	conn.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "the API's JSON answer")
	return cmd
}

// partnerFields are the flags that describe a partner.
type partnerFields struct {
	name, issuer, encryptionCert, channel, webhookURL string
	roles, certFiles, subjects, mail, profiles        []string
}

func (f *partnerFields) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.name, "name", "", "the partner's name")
	fl.StringArrayVar(&f.roles, "role", nil, "partner, agent, auditor or admin (repeatable; add: default partner)")
	fl.StringArrayVar(&f.certFiles, "partner-cert", nil, "a certificate of the partner (PEM), claimed by its SHA-256 fingerprint (repeatable)")
	fl.StringArrayVar(&f.subjects, "subject", nil, `a certificate subject the partner is claimed by, "CN=...,O=..." as whoami shows it (repeatable)`)
	fl.StringVar(&f.issuer, "issuer", "", "the issuer every --subject must have (default: any issuer of the client roots)")
	fl.StringVar(&f.encryptionCert, "encryption-cert", "", "the certificate dossiers sent to the partner are encrypted for (PEM)")
	fl.StringVar(&f.channel, "channel", "", "pull, webhook or mail (add: default pull)")
	fl.StringVar(&f.webhookURL, "webhook-url", "", "the webhook channel's https:// endpoint")
	fl.StringArrayVar(&f.mail, "mail", nil, "a mail address of the partner (repeatable)")
	fl.StringArrayVar(&f.profiles, "sign-profile", nil, "a signature profile the partner may use, * for all (repeatable)")
}

// patch is the JSON merge patch of the flags given: each replaces its
// field whole.
func (f *partnerFields) patch(cmd *cobra.Command) (map[string]any, error) {
	changed := cmd.Flags().Changed
	m := map[string]any{}
	if changed("name") {
		m["name"] = f.name
	}
	if changed("role") {
		m["roles"] = f.roles
	}
	if changed("partner-cert") || changed("subject") || changed("issuer") {
		if changed("issuer") && len(f.subjects) == 0 {
			return nil, &exitError{code: exitUsage, err: usageMistake{errors.New("--issuer goes with --subject")}}
		}
		rules := []middleoffice.CertificateRule{}
		for _, file := range f.certFiles {
			data, err := os.ReadFile(file)
			if err != nil {
				return nil, inputError(err)
			}
			certs, err := certvalidation.ParseCertificates(data)
			if err != nil {
				return nil, inputError(fmt.Errorf("%s: %w", file, err))
			}
			sum := sha256.Sum256(certs[0].Raw)
			rules = append(rules, middleoffice.CertificateRule{Fingerprint: hex.EncodeToString(sum[:])})
		}
		for _, s := range f.subjects {
			rules = append(rules, middleoffice.CertificateRule{Subject: s, Issuer: f.issuer})
		}
		m["certificates"] = rules
	}
	if changed("encryption-cert") {
		if f.encryptionCert == "" {
			m["encryption_certificate"] = nil
		} else {
			data, err := os.ReadFile(f.encryptionCert)
			if err != nil {
				return nil, inputError(err)
			}
			certs, err := certvalidation.ParseCertificates(data)
			if err != nil {
				return nil, inputError(fmt.Errorf("%s: %w", f.encryptionCert, err))
			}
			m["encryption_certificate"] = certs[0].Raw
		}
	}
	if changed("channel") || changed("webhook-url") {
		ch := map[string]any{"url": nil}
		if changed("channel") {
			ch["type"] = f.channel
		}
		if f.webhookURL != "" {
			ch["url"] = f.webhookURL
		}
		m["channel"] = ch
	}
	if changed("mail") {
		m["mail"] = f.mail
	}
	if changed("sign-profile") {
		m["signature_profiles"] = f.profiles
	}
	return m, nil
}

// newPartnerAddCommand is pec partner add, or update.
func newPartnerAddCommand(update bool) *cobra.Command {
	var (
		conn   apiFlags
		fields partnerFields
	)
	use, short, long := "add ID --name NAME", "Add a partner to the directory", `add creates the partner ID. Its certificates are claimed by fingerprint (--partner-cert FILE) or by
subject (--subject DN, with --issuer DN: only from that issuer); it has the roles --role (default
partner), the delivery channel --channel (default pull; webhook needs --webhook-url), the mail addresses
--mail, and may use the signature profiles --sign-profile beside those whose allowed_clients name it.
It prints the evidence id of the change.`
	if update {
		use, short, long = "update ID", "Change some fields of a partner", `update changes the fields whose flags are given, each replaced whole (--role, --partner-cert and
--subject replace the lists; --encryption-cert "" removes the certificate), as a JSON merge patch
(RFC 7396). It prints the evidence id of the change (that of the last change when nothing changed).`
	}
	cmd := &cobra.Command{
		Use:   use + " [flags] --api URL --cert C.pem --key C.key [--roots ROOT.pem]",
		Short: short,
		Long:  long,
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			id := a[0]
			patch, err := fields.patch(cmd)
			if err != nil {
				return err
			}
			if !update && fields.name == "" {
				return &exitError{code: exitUsage, err: usageMistake{errors.New("--name NAME is required")}}
			}
			if update && len(patch) == 0 {
				return &exitError{code: exitUsage, err: usageMistake{errors.New("nothing to change: give the flags of the fields to change")}}
			}
			c, err := conn.client()
			if err != nil {
				return err
			}
			var p *middleoffice.Partner
			verb := "updated"
			if update {
				p, err = c.PatchPartner(cmd.Context(), id, patch)
			} else {
				// The fields given, as a partner: what the flags leave
				// out, the node defaults (roles, channel).
				patch["id"] = id
				var add middleoffice.Partner
				data, merr := json.Marshal(patch)
				if merr == nil {
					merr = json.Unmarshal(data, &add)
				}
				if merr != nil {
					return inputError(merr)
				}
				verb = "added"
				p, err = c.AddPartner(cmd.Context(), add)
			}
			if err != nil {
				return apiError(err)
			}
			return reportChange(cmd, *p, verb)
		},
	}
	fields.register(cmd)
	conn.register(cmd)
	return cmd
}

// newPartnerDisableCommand is pec partner disable, or enable.
func newPartnerDisableCommand(disable bool) *cobra.Command {
	var conn apiFlags
	name, short, long := "disable", "Disable a partner: its certificates are refused from its next request",
		`disable refuses the partner's certificates with 403 on every route, from its next request on every
connection, until enable. It prints the evidence id of the change.`
	if !disable {
		name, short, long = "enable", "Enable a disabled partner again", `enable accepts a disabled partner's certificates again. It prints the evidence id of the change.`
	}
	cmd := &cobra.Command{
		Use:   name + " ID --api URL --cert C.pem --key C.key [--roots ROOT.pem]",
		Short: short,
		Long:  long,
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := conn.client()
			if err != nil {
				return err
			}
			p, err := c.SetPartnerDisabled(cmd.Context(), a[0], disable)
			if err != nil {
				return apiError(err)
			}
			return reportChange(cmd, *p, name+"d")
		},
	}
	conn.register(cmd)
	return cmd
}

// reportChange prints the change's evidence id on stdout, and what was done
// on stderr.
func reportChange(cmd *cobra.Command, p middleoffice.Partner, verb string) error {
	fmt.Fprintln(cmd.OutOrStdout(), p.EvidenceID)
	fmt.Fprintf(cmd.ErrOrStderr(), "pec: partner %s %s (revision %d); evidence %s\n", p.ID, verb, p.Revision, p.EvidenceID)
	return nil
}
