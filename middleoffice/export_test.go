package middleoffice

// WithoutInlinePayloads makes an embedded store write every payload to a
// file of its own, for the tests that look at those files.
func WithoutInlinePayloads(s ExchangeStore) {
	if b, ok := s.(*BoltExchangeStore); ok {
		b.inlineMax = 0
	}
}
