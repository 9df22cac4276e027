package ott

// SanitizeCloseCode turns a kick reason into a code that may be sent in a
// WebSocket close frame (RFC 6455 §7.4), keeping what the browser does with
// it (ott/PROTOCOL.md §5.4: it reconnects below 4000 and gives up from 4000
// on):
//
//	1000-1003, 1007-1013, 3000-4999   unchanged (legal)
//	> 4999                            4000 (CloseUnknown): stays "do not reconnect"
//	< 1000, 1004, 1005, 1006, 1014,
//	1015, 1016-2999                   1000 (normal closure): stays "reconnect"
//
// 1014 (bad gateway) is registered, but WebSocket libraries such as
// gorilla's refuse it on receipt, so it is not passed on.
//
// 1005 and 1006 are what a browser reports when no close frame or no status
// arrived, and it reconnects on both; 1000 keeps that. A kick reason that
// was not even an integer decodes as 0 and so also becomes 1000.
func SanitizeCloseCode(code int) int {
	switch {
	case code > 4999:
		return CloseUnknown
	case code >= 3000:
		return code
	case code >= 1000 && code <= 1013 && code != 1004 && code != 1005 && code != 1006:
		return code
	}
	return 1000
}
