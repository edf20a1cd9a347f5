-- Drives editors/nvim (the labls plugin) as a user would: setup(), open a script, :LablsRun,
-- the diagnostic, :LablsRuns, then :LablsRun of a long script and :LablsCancel. JSON to
-- $LABLS_OUT.
vim.opt.runtimepath:prepend(vim.env.LABLS_PLUGIN)
vim.g.loaded_python3_provider = 0  -- (the Python ftplugin would look for pynvim: slow, unused)
local notes = {}
vim.notify = function(msg) table.insert(notes, msg) end
local finish = dofile(vim.env.LABLS_TESTS .. "/nvim_common.lua").finish
local function noted(pattern)
  return vim.wait(30000, function()
    for _, n in ipairs(notes) do if n:find(pattern) then return true end end
    return false
  end, 20)
end

-- as in a user's init.lua: before any file is read
require("labls").setup({ cmd = { vim.env.LABLS_PYTHON, "-m", "labls.server.cli", "serve" } })
vim.cmd("filetype on")

vim.api.nvim_create_autocmd("VimEnter", { callback = function()
  local buf = vim.api.nvim_get_current_buf()
  local attached = vim.wait(15000, function()
    for _, c in pairs(vim.lsp.buf_get_clients(buf)) do
      if c.name == "labls" and c.server_capabilities then return true end
    end
    return false
  end, 20)
  if not attached then return finish({ error = "not attached", notes = notes }) end
  vim.cmd("LablsRun")
  local diag = vim.wait(30000, function()
    for _, d in ipairs(vim.diagnostic.get(buf)) do
      if d.source == "labls" and d.severity == vim.diagnostic.severity.ERROR then return true end
    end
    return false
  end, 20)
  vim.cmd("LablsRuns")
  local listed = vim.wait(15000, function()
    return vim.api.nvim_buf_get_name(0):find("labls://runs") ~= nil
  end, 20)
  local runs = listed and vim.api.nvim_buf_get_lines(0, 0, -1, false) or {}
  vim.cmd("wincmd p")
  vim.cmd("LablsRun forever.py")
  local started = vim.wait(15000, function()
    for _, n in ipairs(notes) do if n:find("queued") or n:find("running") then return true end end
    return false
  end, 20)
  vim.wait(1000)
  vim.cmd("LablsCancel")
  local cancelled = noted("cancelled")
  finish({ root = vim.lsp.buf_get_clients(buf)[next(vim.lsp.buf_get_clients(buf))].config.root_dir,
           diagnostic = diag, runs = runs, started = started, cancelled = cancelled,
           notes = notes })
end })
