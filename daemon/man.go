package daemon

import (
	"fmt"
	"regexp"
	"strings"
)

// manPage is mirrorfs(8) in roff, made from the --help text (usage.txt)
// at each build, so that the two cannot say different things: its first
// line is the synopsis, its first paragraph the description, its
// "Options:" block the options (a line indented by two opens an option,
// by seven a mount option, and a deeper one goes on with the text before
// it), and a later paragraph that opens with "Heading:" is a section.
func manPage(help, version string) string {
	var b strings.Builder
	fmt.Fprintf(&b, ".TH MIRRORFS 8 \"\" \"mirrorfs %s\" \"System Administration\"\n.nh\n.ad l\n", roff(version))
	b.WriteString(".SH NAME\nmirrorfs \\- mirror a folder at a mountpoint through FUSE\n")
	paras := strings.Split(strings.TrimSpace(help), "\n\n")
	synopsis := strings.TrimPrefix(paras[0], "Usage: mirrorfs ")
	fmt.Fprintf(&b, ".SH SYNOPSIS\n.B mirrorfs\n%s\n", roff(synopsis))
	section := ""
	for _, p := range paras[1:] {
		head, body, isSection := strings.Cut(p, ":")
		switch {
		case section == "":
			section = "DESCRIPTION"
			fmt.Fprintf(&b, ".SH DESCRIPTION\n%s\n", roffText(p))
		case head == "Options" && isSection && strings.HasPrefix(body, "\n"):
			b.WriteString(".SH OPTIONS\n")
			manOptions(&b, strings.Split(strings.TrimPrefix(body, "\n"), "\n"))
		case isSection && sectionHead.MatchString(head):
			fmt.Fprintf(&b, ".SH %s\n%s\n", manSection(head), roffText(strings.TrimSpace(body)))
		default:
			fmt.Fprintf(&b, ".PP\n%s\n", roffText(p))
		}
	}
	b.WriteString(".SH SEE ALSO\nmount.fuse3(8), fusermount3(1), fstab(5), systemd.service(5)\n.PP\n" +
		"mirrorfs\\-ctl (the init\\-script wrapper) and the examples under share/doc/mirrorfs/examples\n")
	return b.String()
}

// sectionHead is a paragraph's "Heading:" (a word or two, capitalised).
var sectionHead = regexp.MustCompile(`^[A-Z][a-z]+( [a-z]+)?$`)

func manSection(head string) string {
	if head == "Exit codes" {
		return "EXIT STATUS"
	}
	return strings.ToUpper(head)
}

// optionTerm splits "  -f, --foreground   stay in the foreground" into
// the option and its text (a run of two blanks or more between them).
var optionTerm = regexp.MustCompile(`^(\S.*?)(?:\s{2,}(\S.*))?$`)

// manOptions writes the Options block: .TP per option, the mount options
// of -o as an indented list of their own.
func manOptions(b *strings.Builder, lines []string) {
	nested := false
	for _, line := range lines {
		indent := len(line) - len(strings.TrimLeft(line, " "))
		text := strings.TrimSpace(line)
		switch {
		case indent <= 2 || (indent <= 7 && nested):
			if indent <= 2 && nested {
				b.WriteString(".RE\n")
				nested = false
			}
			m := optionTerm.FindStringSubmatch(text)
			fmt.Fprintf(b, ".TP\n.B %s\n", roff(m[1]))
			if m[2] != "" {
				fmt.Fprintf(b, "%s\n", roffText(m[2]))
			}
		case indent <= 7:
			b.WriteString(".RS\n")
			nested = true
			m := optionTerm.FindStringSubmatch(text)
			fmt.Fprintf(b, ".TP\n.B %s\n", roff(m[1]))
			if m[2] != "" {
				fmt.Fprintf(b, "%s\n", roffText(m[2]))
			}
		default:
			fmt.Fprintf(b, "%s\n", roffText(text))
		}
	}
	if nested {
		b.WriteString(".RE\n")
	}
}

// roff escapes text for one line of roff: backslashes, hyphens (so that
// options are not broken or shown as dashes), and a leading dot or quote.
func roff(s string) string {
	s = strings.NewReplacer(`\`, `\e`, "-", `\-`).Replace(s)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// roffText escapes a paragraph, line by line.
func roffText(p string) string {
	lines := strings.Split(p, "\n")
	for i, l := range lines {
		lines[i] = roff(strings.TrimSpace(l))
	}
	return strings.Join(lines, "\n")
}
