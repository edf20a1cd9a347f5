-- Loaded from the runtime path; setup() is the user's to call (with their `cmd`).
if vim.g.loaded_labls then return end
vim.g.loaded_labls = true
