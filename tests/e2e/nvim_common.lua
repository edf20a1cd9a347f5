-- What the Neovim test drivers share: writing the result, and labls started and attached.
local M = {}

function M.finish(payload)
  local f = io.open(vim.env.LABLS_OUT, "w")
  f:write(vim.fn.json_encode(payload))
  f:close()
  vim.cmd("qa!")
end

-- labls started for the workspace $LABLS_WS and attached to `buf`; the client, or nil.
function M.attach(buf)
  local id = vim.lsp.start_client({
    name = "labls",
    cmd = { vim.env.LABLS_PYTHON, "-m", "labls.server.cli", "serve" },
    root_dir = vim.env.LABLS_WS,
  })
  vim.lsp.buf_attach_client(buf, id)
  local client = vim.lsp.get_client_by_id(id)
  local ready = vim.wait(15000, function()
    return client ~= nil and client.server_capabilities ~= nil
  end, 20)
  return ready and client or nil, id
end

return M
