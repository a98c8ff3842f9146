package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"pec/evidence"
	"pec/hsm"
	"pec/proof"
)

// newProofAcceptStoreCommand is the operator's explicit step after a
// deliberate restore: pec serve refuses a store that is behind the node's
// saved checkpoint or forks from it, until the operator accepts the store
// as it is, which is itself recorded as evidence.
func newProofAcceptStoreCommand() *cobra.Command {
	var configPath, reason string
	cmd := &cobra.Command{
		Use:   "accept-store --config FILE --reason TEXT",
		Short: "Accept a restored store that is behind or forks from the node's newest checkpoint, recording it as evidence",
		Long: `accept-store is for a store put back on purpose (a backup restored after a disk loss): pec serve
and pec proof audit refuse a store that is behind the checkpoint the node saved last
(proof.checkpoint_file) or disagrees with it. accept-store appends an admin.action record
(proof.store-accepted) naming both checkpoints, the operator's reason and who ran it, seals it,
and makes the store's new checkpoint the saved one; the replaced file is kept beside it
(FILE.replaced-TIME). Monitors that saw the newer checkpoint will report the rollback: that is
what they are for. The node must be stopped.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if reason == "" {
				return usageError("--reason TEXT is required: why the store is accepted as it is")
			}
			cfg, err := proofConfig(configPath)
			if err != nil {
				return err
			}
			if cfg.Proof.PostgresURLEnv == "" {
				if err := nodeStopped(cfg.DataDir, "accept-store changes the embedded evidence log, which the node holds: stop the node first"); err != nil {
					return failure(err)
				}
			}
			ctx := cmd.Context()
			log := slog.New(slog.DiscardHandler)
			keys, err := hsm.Open(ctx, cfg.HSM, hsm.Options{Logger: log})
			if err != nil {
				return failure(fmt.Errorf("open keys: %w", err))
			}
			defer keys.Close()
			var n node
			defer n.close(log)
			authority, _, err := openTSA(ctx, cfg, keys, log, nil, &n)
			if err != nil {
				return failure(fmt.Errorf("the node's TSA: %w (is pec serve running on this node?)", err))
			}
			guard := cfg.Proof.CheckpointFile
			// Opened without the guard: the store is the one checked here.
			cfg.Proof.CheckpointFile = ""
			plog, err := openProof(ctx, cfg, keys, authority, log, nil, &n)
			if err != nil {
				return failure(err)
			}
			_, checkErr := proof.CheckAgainstSaved(ctx, plog.Store(), plog.Verifier(), guard)
			re, ok := errors.AsType[*proof.RollbackError](checkErr)
			if checkErr != nil && !ok {
				return failure(checkErr)
			}
			if !ok {
				fmt.Fprintf(cmd.OutOrStdout(), "accept-store: the store holds the node's newest checkpoint or extends it: nothing to accept\n")
				return nil
			}
			savedNote, err := os.ReadFile(guard)
			if err != nil {
				return failure(err)
			}
			rec := &evidence.Record{
				Type:    evidence.AdminAction,
				Subject: "proof.store-accepted",
				Actors:  []evidence.Actor{{Role: "operator", Subject: operatorName()}},
				Digests: []evidence.Digest{{Name: "replaced-checkpoint", Algorithm: "sha256", Value: sum(savedNote)}},
				Attributes: []evidence.Attribute{
					{Key: "reason", Value: reason},
					{Key: "refusal", Value: re.Reason},
					{Key: "replaced_root", Value: hex.EncodeToString(re.SavedRoot)},
					{Key: "replaced_size", Value: fmt.Sprint(re.SavedSize)},
					{Key: "store_root", Value: hex.EncodeToString(re.StoreRoot)},
					{Key: "store_size", Value: fmt.Sprint(re.StoreSize)},
				},
			}
			ids, err := plog.Append(ctx, rec)
			if err != nil {
				return failure(err)
			}
			if err := plog.Close(); err != nil {
				return failure(err)
			}
			head := plog.Latest()
			if head == nil {
				return failure(errors.New("accept-store: the record was not sealed"))
			}
			kept := fmt.Sprintf("%s.replaced-%s", guard, time.Now().UTC().Format("20060102T150405Z"))
			if err := os.Rename(guard, kept); err != nil {
				return failure(err)
			}
			if err := proof.SaveCheckpoint(guard, head.Checkpoint); err != nil {
				return failure(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "accept-store: %s; recorded as evidence %s; the saved checkpoint is now of size %d (the replaced one, of size %d, is in %s)\n",
				re.Reason, ids[0], head.Size, re.SavedSize, kept)
			return nil
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "configuration file (pec.yaml)")
	cmd.Flags().StringVar(&reason, "reason", "", "why the store is accepted as it is (recorded)")
	return cmd
}

func sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

// operatorName names who runs a local command, for its evidence.
func operatorName() string {
	name := "local operator"
	if u := os.Getenv("USER"); u != "" {
		name += " " + u
	}
	if h, err := os.Hostname(); err == nil {
		name += "@" + h
	}
	return name
}
