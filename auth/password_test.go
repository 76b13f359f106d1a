package auth

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func TestHashPassword(t *testing.T) {
	tests := []struct {
		name    string
		pw      string
		cost    int
		wantErr error
		anyErr  bool
	}{
		{"ok", "hunter2", bcrypt.MinCost, nil, false},
		{"72 bytes", strings.Repeat("p", 72), bcrypt.MinCost, nil, false},
		{"72 bytes multibyte", strings.Repeat("é", 36), bcrypt.MinCost, nil, false},
		{"empty", "", bcrypt.MinCost, ErrWeakPassword, true},
		{"73 bytes", strings.Repeat("p", 73), bcrypt.MinCost, ErrWeakPassword, true},
		{"cost too low", "hunter2", bcrypt.MinCost - 1, nil, true},
		{"cost negative", "hunter2", -1, nil, true},
		{"cost too high", "hunter2", bcrypt.MaxCost + 1, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := HashPassword(tt.pw, tt.cost)
			if tt.anyErr {
				if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) || h != "" {
					t.Fatalf("HashPassword = %q, %v; want error %v", h, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cost, _ := bcrypt.Cost([]byte(h)); cost != tt.cost {
				t.Fatalf("cost = %d, want %d", cost, tt.cost)
			}
			if err := CheckPassword(h, tt.pw); err != nil {
				t.Fatalf("CheckPassword of own hash: %v", err)
			}
		})
	}
}

func TestHashPasswordDefaultCost(t *testing.T) {
	if testing.Short() {
		t.Skip("default bcrypt cost is slow")
	}
	h, err := HashPassword("hunter2", 0)
	if err != nil {
		t.Fatal(err)
	}
	if cost, _ := bcrypt.Cost([]byte(h)); cost != bcrypt.DefaultCost {
		t.Fatalf("cost = %d, want default %d", cost, bcrypt.DefaultCost)
	}
}

func TestCheckPassword(t *testing.T) {
	long := strings.Repeat("p", 72)
	hash, err := HashPassword("correct horse", bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	longHash, err := HashPassword(long, bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := HashPassword("correct horse", bcrypt.MinCost)
	if again == hash {
		t.Fatal("hashes are not salted")
	}
	tests := []struct {
		name string
		hash string
		pw   string
		ok   bool
	}{
		{"match", hash, "correct horse", true},
		{"second hash matches", again, "correct horse", true},
		{"72 bytes", longHash, long, true},
		{"wrong", hash, "correct horsE", false},
		{"prefix", hash, "correct", false},
		{"empty password", hash, "", false},
		{"73 bytes sharing 72", longHash, long + "x", false},
		{"unknown user (empty hash)", "", "correct horse", false},
		{"corrupt hash", "$2a$04$nope", "correct horse", false},
		{"plaintext stored", "correct horse", "correct horse", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckPassword(tt.hash, tt.pw)
			if tt.ok && err != nil {
				t.Fatalf("CheckPassword = %v", err)
			}
			if !tt.ok && err != ErrBadPassword {
				t.Fatalf("CheckPassword = %v, want ErrBadPassword", err)
			}
		})
	}
}
