package middleoffice

import bolt "go.etcd.io/bbolt"

// WithoutInlinePayloads makes an embedded store write every payload to a
// file of its own, for the tests that look at those files.
func WithoutInlinePayloads(s ExchangeStore) {
	if b, ok := s.(*BoltExchangeStore); ok {
		b.inlineMax = 0
	}
}

// WriteTransactions is the number of write transactions an embedded
// store ran.
func WriteTransactions(s *BoltExchangeStore) int64 { return s.writes.txs.Load() }

// StagedMaxAge is how long a payload stays staged without a step.
const StagedMaxAge = stagedMaxAge

// BoltDB is the bbolt file of an embedded store.
func BoltDB(s *BoltExchangeStore) *bolt.DB { return s.db }
