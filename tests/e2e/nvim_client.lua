-- A minimal Neovim 0.7 LSP client for the labls end-to-end test.
-- Opens the script given on the command line, attaches labls, runs the script through
-- labls.run.start, waits for labls's diagnostics and writes them as JSON to $LABLS_OUT.
local common = dofile(vim.env.LABLS_TESTS .. "/nvim_common.lua")
local finish = common.finish

vim.api.nvim_create_autocmd("VimEnter", { callback = function()
  local buf = vim.api.nvim_get_current_buf()
  local client, id = common.attach(buf)
  if not client then return finish({ error = "labls did not initialize" }) end
  local answer = nil
  client.request("workspace/executeCommand", {
    command = "labls.run.start",
    arguments = { { script = vim.fn.expand("%:t") } },
  }, function(err, result) answer = { err = err, result = result } end, buf)
  local got = vim.wait(60000, function()
    for _, d in ipairs(vim.diagnostic.get(buf)) do
      if d.source == "labls" and d.severity == vim.diagnostic.severity.ERROR then return true end
    end
    return false
  end, 20)
  local diags = {}
  for _, d in ipairs(vim.diagnostic.get(buf)) do
    local lsp = (d.user_data or {}).lsp or {}
    table.insert(diags, { lnum = d.lnum, col = d.col, message = d.message, source = d.source,
                          code = lsp.code or d.code, severity = d.severity })
  end
  vim.lsp.stop_client(id)
  finish({ answer = answer, diagnostics = diags, timed_out = not got })
end })
