package ott_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/roomlb/roomlb/ott"
)

var (
	// A broadcast chat, the most common room_msg.
	benchRoomMsg = []byte(`{"type":"room_msg","payload":{"room":"MovieNight","payload":{"action":"chat","from":{"id":"5b2f7c1e-3d4a-4e8b-b1c2-9a0d8e7f6a51","name":"brave_teal_otter","isLoggedIn":false,"status":"none","role":0},"text":"hi all"}}}`)
	// A unicast full sync, the biggest one of a join.
	benchRoomMsgSync = []byte(`{"type":"room_msg","payload":{"room":"MovieNight","client_id":"5b2f7c1e-3d4a-4e8b-b1c2-9a0d8e7f6a51","payload":{"action":"sync","name":"MovieNight","title":"Friday films","description":"","isTemporary":false,"visibility":"public","queueMode":"vote","currentSource":{"service":"youtube","id":"abc123XYZ00","title":"Trailer","length":142},"queue":[` +
		strings.Repeat(`{"service":"youtube","id":"abc123XYZ01","title":"Another video with a longer title","description":"A description of the video\nwith two lines","length":3600,"thumbnail":"https://i.ytimg.com/vi/abc123XYZ01/mqdefault.jpg"},`, 9) +
		`{"service":"direct","id":"https://example.com/v.mp4"}],"isPlaying":true,"playbackPosition":12.5,"playbackSpeed":1,"grants":[[-1,4194303],[0,4063231],[1,4063231]],"hasOwner":false,"voteCounts":[],"videoSegments":[],"autoSkipSegmentCategories":[],"prevQueue":null,"restoreQueueBehavior":"prompt","enableVoteSkip":false,"votesToSkip":0}}}`)
	benchChat = []byte(`{"action":"req","request":{"type":11,"text":"hi all"}}`)
)

func BenchmarkDecodeRoomMsg(b *testing.B) {
	for _, bc := range []struct {
		name  string
		frame []byte
	}{{"chat", benchRoomMsg}, {"sync", benchRoomMsgSync}} {
		b.Run(bc.name+"/DecodeM2B", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.frame)))
			for b.Loop() {
				m, err := ott.DecodeM2B(bc.frame)
				if err != nil || m.Type != ott.TypeRoomMsg {
					b.Fatal(m.Type, err)
				}
			}
		})
		b.Run(bc.name+"/Decoder", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.frame)))
			var d ott.Decoder
			for b.Loop() {
				m, err := d.DecodeM2B(bc.frame)
				if err != nil || m.Type != ott.TypeRoomMsg {
					b.Fatal(m.Type, err)
				}
			}
		})
		// The approach of the brief with encoding/json, for comparison.
		b.Run(bc.name+"/encoding-json", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.frame)))
			for b.Loop() {
				var env struct {
					Type    string          `json:"type"`
					Payload json.RawMessage `json:"payload"`
				}
				if err := json.Unmarshal(bc.frame, &env); err != nil {
					b.Fatal(err)
				}
				var m ott.RoomMsg
				if err := json.Unmarshal(env.Payload, &m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAppendClientMsg(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, 0, 512)
	m := ott.ClientMsg{ClientID: "5b2f7c1e-3d4a-4e8b-b1c2-9a0d8e7f6a51", Payload: benchChat}
	for b.Loop() {
		buf = m.Append(buf[:0])
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkAppendClientMsgEncodingJSON(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		type payload struct {
			ClientID string          `json:"client_id"`
			Payload  json.RawMessage `json:"payload"`
		}
		_, err := json.Marshal(struct {
			Type    string  `json:"type"`
			Payload payload `json:"payload"`
		}{"client_msg", payload{"5b2f7c1e-3d4a-4e8b-b1c2-9a0d8e7f6a51", benchChat}})
		if err != nil {
			b.Fatal(err)
		}
	}
}
