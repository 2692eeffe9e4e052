//go:build !race

package credclient_test

const raceEnabled = false
