//go:build !cgo

package hsmtest

const cgo = false
