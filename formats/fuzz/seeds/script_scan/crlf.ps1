param($x)
Write-Output "héllo"
