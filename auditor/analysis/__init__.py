"""The analyser: who received what from the phone, on what evidence."""
