package proof

// EncodeBundle writes b as Export does (Bundle.encode, which fills the
// manifest's derived fields): for the rule table of package proof_test,
// which changes one thing in a read bundle and needs it otherwise in the
// canonical form that ReadBundle demands.
func EncodeBundle(b *Bundle) ([]byte, error) { return b.encode() }
