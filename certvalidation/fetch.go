package certvalidation

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"golang.org/x/sync/singleflight"
)

// fetcher gets CRLs, OCSP responses and certificates over HTTP, each
// bounded in size and time. Concurrent fetches of the same thing share
// one request (singleflight): a burst of validations after a cache entry
// expires costs the responder one request, not one per waiter.
type fetcher struct {
	client  *http.Client
	timeout time.Duration
	group   singleflight.Group
	m       *metrics
}

// fetchResult is what a shared fetch hands to every waiter.
type fetchResult struct {
	body []byte
	aux  []byte // for OCSP: the nonce sent
}

// fetchableURL accepts only http and https URLs: an ldap:// or file:// one
// in a certificate is ignored.
func fetchableURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// do runs fetch once per key at a time. The fetch itself is not cancelled
// when one waiter gives up (others may still want it); it stops at the
// timeout. Each waiter stops waiting when its own ctx ends.
func (f *fetcher) do(ctx context.Context, kind, key string, fetch func(ctx context.Context) (fetchResult, error)) (fetchResult, error) {
	ch := f.group.DoChan(kind+" "+key, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.timeout)
		defer cancel()
		start := time.Now()
		res, err := fetch(fctx)
		f.m.fetched(kind, err, time.Since(start))
		return res, err
	})
	select {
	case <-ctx.Done():
		return fetchResult{}, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return fetchResult{}, r.Err
		}
		return r.Val.(fetchResult), nil
	}
}

// get fetches url with GET, reading at most max bytes.
func (f *fetcher) get(ctx context.Context, kind, rawURL string, max int64) ([]byte, error) {
	res, err := f.do(ctx, kind, rawURL, func(ctx context.Context) (fetchResult, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
		if err != nil {
			return fetchResult{}, err
		}
		body, err := f.send(req, max)
		return fetchResult{body: body}, err
	})
	return res.body, err
}

// post sends body to url; key identifies what is asked (for sharing).
func (f *fetcher) post(ctx context.Context, kind, rawURL, key string, contentType string, build func() (body, aux []byte, err error), max int64) ([]byte, []byte, error) {
	res, err := f.do(ctx, kind, rawURL+" "+key, func(ctx context.Context) (fetchResult, error) {
		body, aux, err := build()
		if err != nil {
			return fetchResult{}, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, bytes.NewReader(body))
		if err != nil {
			return fetchResult{}, err
		}
		req.Header.Set("Content-Type", contentType)
		out, err := f.send(req, max)
		return fetchResult{body: out, aux: aux}, err
	})
	return res.body, res.aux, err
}

func (f *fetcher) send(req *http.Request, max int64) ([]byte, error) {
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %s", resp.Status)
	}
	if resp.ContentLength > max {
		return nil, fmt.Errorf("response of %d bytes exceeds the limit of %d", resp.ContentLength, max)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(body)) > max {
		return nil, fmt.Errorf("response exceeds the limit of %d bytes", max)
	}
	if len(body) == 0 {
		return nil, errors.New("empty response")
	}
	return body, nil
}
