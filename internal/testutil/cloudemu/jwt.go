package cloudemu

import (
	"crypto/hmac"
	"encoding/base64"
	"encoding/json"
	"strings"
)

// signHS256 makes a JWT signed with key. Clients only read the claims
// (exp); the signature lets the emulator tell its own tokens from forgeries.
func signHS256(key []byte, claims map[string]any) string {
	h, _ := json.Marshal(map[string]string{"alg": "HS256", "typ": "JWT"})
	c, _ := json.Marshal(claims)
	s := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
	return s + "." + base64.RawURLEncoding.EncodeToString(hmacSHA256(key, s))
}

// verifyHS256 checks a token from signHS256 and decodes its claims.
func verifyHS256(key []byte, tok string, claims any) bool {
	i := strings.LastIndexByte(tok, '.')
	if i < 0 {
		return false
	}
	sig, err := base64.RawURLEncoding.DecodeString(tok[i+1:])
	if err != nil || !hmac.Equal(sig, hmacSHA256(key, tok[:i])) {
		return false
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return false
	}
	return decodeSegment(parts[1], claims) == nil
}
